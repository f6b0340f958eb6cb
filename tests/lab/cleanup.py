"""Remove labs left behind by crashed runs: `python -m tests.lab.cleanup` (root)."""

from tests.lab.lab import _cleanup_stale, _drop_blackhole_if_last, _locked

if __name__ == "__main__":
    with _locked():
        live = _cleanup_stale()
        _drop_blackhole_if_last()
    print(f"stale labs removed; {len(live)} live lab(s) left untouched")
