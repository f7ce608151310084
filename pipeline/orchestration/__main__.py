"""`python -m pipeline.orchestration record-code`: record every stage's version and code
identity in pipeline/orchestration/code_record.json (tests/test_code_versions.py reads it)."""
import sys

from .identity import write_record

if __name__ == "__main__":
    if sys.argv[1:] != ["record-code"]:
        sys.exit("usage: python -m pipeline.orchestration record-code")
    print(f"wrote {write_record()}")
