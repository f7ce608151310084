"""Progress for long work: a tqdm bar on a terminal, and a log line every ~10 % (the log
reaches Prefect's UI and files, where a bar would be a stream of escape codes)."""
from __future__ import annotations

import logging

log = logging.getLogger("pipeline")


class Progress:
    def __init__(self, total: int, desc: str, progress: bool):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
        self.total, self.desc, self.n, self.next = total, desc, 0, 0.1

    def update(self, k: int = 1) -> None:
        self.bar.update(k)
        self.n += k
        if self.total and (self.n / self.total >= self.next or self.n == self.total):
            log.info("%s: %d/%d", self.desc, self.n, self.total)
            self.next = (int(10 * self.n / self.total) + 1) / 10

    def close(self) -> None:
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
