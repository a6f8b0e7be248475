#!/usr/bin/env python3
"""Make docs/ui.svg, the README's screenshot of the terminal UI, from the example pipeline.

Runs ``example_pipeline/run.sh`` when its results are not there yet (its steps are reused
when they are), opens the UI headless (Textual's ``run_test``) at 180x36 on that project
with the cursor on the evaluate step's experiment, and saves the screen as SVG.

    python scripts/ui_screenshot.py [-o docs/ui.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from resutil.project import Project  # noqa: E402
from resutil.tui.app import DETAIL_DELAY, ResutilApp  # noqa: E402

EXAMPLE = REPO / "example_pipeline"


async def shoot(out: Path) -> None:
    app = ResutilApp(Project.load(EXAMPLE))
    async with app.run_test(size=(180, 36)) as pilot:
        for _ in range(3):  # the catalog, then its metrics, then the detail pane
            await pilot.pause(DETAIL_DELAY + 0.1)
            await app.workers.wait_for_complete()
        steps = [e.step for e in app.rows_shown]
        app.table.move_cursor(row=steps.index("evaluate") if "evaluate" in steps else 0)
        await pilot.pause(DETAIL_DELAY + 0.1)
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.save_screenshot(out.name, str(out.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "ui.svg")
    args = ap.parse_args()
    if not list((EXAMPLE / "results").glob("*_evaluate")):
        subprocess.run(["bash", str(EXAMPLE / "run.sh")], check=True, stdout=subprocess.DEVNULL)
    asyncio.run(shoot(args.output.resolve()))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
