"""docs/prefect.md's server path keeps its state away from the ephemeral mode `make demo` uses:
its own PREFECT_HOME, the API URL in the shell's environment (never written into a profile
with `prefect config set`), and a teardown. The path itself is walked by
tests/test_flows.py::test_server_deploy_and_worker."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_server_path_has_its_own_home_and_a_teardown():
    text = (ROOT / "docs" / "prefect.md").read_text()
    sec = text[text.index("## The server path"):]
    sec = sec[:sec.index("\n## ", 3)]
    server, teardown = _blocks(sec)[:2]
    home = re.search(r"export PREFECT_HOME=(\S+)", server)
    make_home = re.search(r"PREFECT_HOME \?= (\S+)", (ROOT / "Makefile").read_text())
    assert home and make_home and home.group(1).rsplit("/", 1)[-1] != make_home.group(1).rsplit("/", 1)[-1]
    assert server.index("export PREFECT_HOME") < server.index("prefect server start")
    assert "prefect config set" not in "\n".join(ln.split("#")[0] for ln in server.splitlines()) and "export PREFECT_API_URL" in server
    assert "prefect server stop" in teardown and "unset PREFECT_HOME PREFECT_API_URL" in teardown
