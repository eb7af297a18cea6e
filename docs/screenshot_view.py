"""The README's viewer screenshot: a demo run's view.html in headless Chromium, one pair opened.

    python docs/screenshot_view.py runs/demo/view.html docs/view_demo.png            # the most uncertain pair
    python docs/screenshot_view.py runs/demo/view.html docs/view_demo.png --pair synth-pool-1-17

Needs chromium, chromium-driver and selenium (egt.reporting.browser says how to install them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("view", type=Path, help="a view.html written by `egt view` or `egt demo`")
    parser.add_argument("output", type=Path, help="PNG to write")
    parser.add_argument("--pair", default=None, help="id of the pair to open (default: the first row, sorted by max)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)

    from egt.reporting.browser import console_errors, headless_chromium

    with headless_chromium(args.width, args.height) as driver:
        driver.get(args.view.resolve().as_uri() + "#sort=max")
        deadline = time.monotonic() + 30
        while not driver.find_elements("css selector", "#rows tr[data-id]") and time.monotonic() < deadline:
            time.sleep(0.1)
        rows = driver.find_elements("css selector", "#rows tr[data-id]")
        if not rows:
            raise SystemExit(f"{args.view}: no rows appeared within 30 s")
        if args.pair:
            driver.get(args.view.resolve().as_uri() + f"#id={args.pair}&sort=max")
        else:
            rows[0].click()
        deadline = time.monotonic() + 30
        while not driver.find_elements("css selector", "#detail .judgement") and time.monotonic() < deadline:
            time.sleep(0.1)
        errors = console_errors(driver)
        if errors:
            raise SystemExit(f"{args.view}: console errors: {errors}")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.output))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
