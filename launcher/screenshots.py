"""``python -m launcher.screenshots [OUT]``: the dashboard's screenshots in ``docs/dashboard/``.

Starts a small stack on loopback (Anvil, 3 edges, the cloud), runs a 2-round task with 8
vehicles (one same-value attacker, ε reported), then captures the Tasks, Task and Stack
pages at laptop (1280 px) and phone (390 px) widths with the headless Chromium of
:mod:`launcher.browser`; each PNG is reduced to a 128-colour palette to stay small."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

from PIL import Image

from launcher.browser import Browser
from launcher.stack import OPERATOR, LocalStack, run_task

PAGES = {"tasks": "/ui", "task": "/ui/tasks/{task_id}", "stack": "/ui/stack"}
READY = {"tasks": "#tasks tr[data-task]", "task": "#chart .main-svg", "stack": "#edges tr[data-edge]"}
DEVICES = {"laptop": {"width": 1280, "height": 900}, "phone": {"phone": True}}


@contextmanager
def small_task(run_dir: Path, vehicles: int = 8, edges: int = 3, rounds: int = 2) -> Iterator[tuple[LocalStack, int]]:
    """A stack that ran one settled task: ``with small_task(dir) as (stack, task_id): ...``."""
    from bmfl.data import load_dataset
    from bmfl.protocol.schemas import TaskDraft, TrainingSpec
    from chain.anvil import dev_key
    from vehicle_client.fleet import Fleet
    from vehicle_client.settings import FleetSettings

    with LocalStack(run_dir, edges=edges, round_timeout_s=120) as stack:
        train, test = load_dataset("mnist")
        fleet = Fleet(
            FleetSettings(
                cloud_url=stack.cloud.url, rpc_url=stack.rpc_url, deployment=stack.deployment_file,
                funder_key=dev_key(OPERATOR), vehicles=vehicles, seed=3, attack="same_value",
                attack_fraction=1 / vehicles, report_epsilon=True,
            ),
            train_data=train.subset(list(range(300 * vehicles))),
        )  # fmt: skip
        try:
            fleet.setup()
            draft = TaskDraft(
                rounds=rounds, reward_wei=10**18, block_reward_wei=10**16, training=TrainingSpec(epochs=1), challenge_period_s=2
            )  # fmt: skip
            task_id, _ = run_task(stack, fleet, draft, test.subset(list(range(500))))
            yield stack, task_id
        finally:
            fleet.close()


def shrink(png: bytes) -> bytes:
    """The screenshot as a 128-colour palette PNG (text and flat colours survive)."""
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def capture(base_url: str, task_id: int, out_dir: Path) -> list[Path]:
    """``{page}-{device}.png`` for every page and device, the whole page each time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for device, options in DEVICES.items():
        with Browser(**options) as browser:
            for page, path in PAGES.items():
                browser.open(base_url + path.format(task_id=task_id))
                browser.wait_for(READY[page])
                time.sleep(0.5)  # let the chart finish its layout
                target = out_dir / f"{page}-{device}.png"
                target.write_bytes(shrink(browser.full_page_screenshot()))
                written.append(target)
    return written


def main(out_dir: Path = Path("docs/dashboard")) -> None:
    with TemporaryDirectory(prefix="bmfl-screenshots-") as tmp, small_task(Path(tmp)) as (stack, task_id):
        for path in capture(stack.cloud.url, task_id, out_dir):
            print(f"{path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:2]))
