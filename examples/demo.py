"""The demo behind `make demo`: write values on the embedded default, read them back
from a second process, and show where the data lives."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal

import satchel

READER = """
import satchel
with satchel.open(scope="demo") as store:
    for key, value in store.items("demo:*"):
        print(f"  {key:<16} {type(value).__name__:<9} {value!r}")
    print(f"  visits is now {store.incr('demo:visits')}")
"""


def main() -> None:
    with satchel.open(scope="demo") as store:
        print(f"satchel keeps this demo in {store.url}\n")
        store.set_many(
            {
                "demo:user": {"name": "Ada", "langs": ("en", "fr"), "admin": True},
                "demo:price": Decimal("19.99"),
                "demo:seen": dt.datetime.now(dt.UTC),
                "demo:blob": b"\x00\x01binary",
                "demo:note": "123",
            }
        )
        store.set("demo:session", "expires soon", ttl=60)
        visits = store.incr("demo:visits")
        print(
            f"wrote {len(list(store.keys('demo:*')))} keys (visits={visits}); "
            "a second process reads them back with their types:"
        )
    sys.stdout.flush()
    subprocess.run([sys.executable, "-c", READER], check=True)


if __name__ == "__main__":
    main()
