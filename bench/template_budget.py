"""Template budget benchmark: what the render budget costs a normal welcome, how long the worst templates run
before the budget stops them, and how long a hot reload holds the event loop.

    .venv/bin/python -m bench.template_budget [--renders 2000] [--worst 20]

* **Normal welcome** (the baseline): the shipped ``new_customer_nurture`` welcome (``welcome/default.j2``) rendered
  by :class:`scrm.sop.render.SopRenderer` against the sample context, and the same text through Jinja2's plain
  ``ImmutableSandboxedEnvironment`` (no budget): the difference is what the budget costs every message.
* **Worst cases**: one template per limit, each rendered until the budget refuses it (steps: a 100000² loop;
  output: a loop printing 20,000 characters; text built: a string doubled 40 times; text filters: ``urlize`` over
  120,000 characters; macro recursion: 2⁴¹ calls), then a silent 100000² loop with the step limit lifted, so only
  the wall-clock deadline stops it. Each figure is the time from the call to the refusal.
* **Hot reload**: the shipped folder plus one hostile template, reloaded (``force``) inline on the event loop and
  through :meth:`CatalogHolder.refresh` (a worker thread), while a task ticking every millisecond records the
  longest gap between its ticks: the stall a callback would see.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from scrm.sop.catalog import CatalogHolder
from scrm.sop.render import SopRenderer, SopRenderError
from scrm.sop.source import load_folder
from scrm.sop.spec import Message
from scrm.templating.budget import RenderBudget, RenderBudgetExceeded, render_streamed
from scrm.templating.compiled import BundleEnvironment, BundleLoader, CompiledBundle
from scrm.templating.context import SAMPLE_CONTEXT, AttachmentCollector, install_filters
from scrm.templating.sandbox import BudgetedSandbox

ROOT = Path(__file__).resolve().parents[1]
SOP_DIR = ROOT / "sop_templates"
RESULTS_DIR = ROOT / "bench" / "results"
NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
WORST: dict[str, str] = {
    "steps": NESTED,
    "output": "{% for i in range(2000) %}0123456789{% endfor %}",
    "text built": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "text filters": "{% set s = 'ab http://x.cn ' * 8000 %}{{ s | urlize | length }}",
    "macro recursion": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
}
HOSTILE = f"""\
id: hostile
name: 恶意模板
kind: contact
trigger:
  event: contact.added
steps:
  - immediately: true
    private_message:
      text: "{NESTED}"
"""


def timings_us(run: Callable[[], Any], times: int) -> dict[str, float]:
    spent: list[float] = []
    for _ in range(times):
        start = time.perf_counter()
        run()
        spent.append((time.perf_counter() - start) * 1e6)
    spent.sort()
    return {
        "median_us": round(statistics.median(spent), 1),
        "p99_us": round(spent[int(len(spent) * 0.99) - 1], 1),
        "max_us": round(spent[-1], 1),
    }


class PlainBundleEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's sandbox without the budget, resolving includes as a bundle does: the baseline."""

    join_path = BundleEnvironment.join_path


def normal_welcome(renders: int) -> dict[str, dict[str, float]]:
    bundle = load_folder(SOP_DIR).bundles["new_customer_nurture"]
    renderer = SopRenderer(bundle)
    message = Message(file="welcome/default.j2")
    plain = PlainBundleEnvironment(loader=BundleLoader(bundle.files), undefined=StrictUndefined, autoescape=False)
    install_filters(plain)
    baseline = plain.get_template("welcome/default.j2")
    budgeted = CompiledBundle(bundle).file("welcome/default.j2")
    variables = {**SAMPLE_CONTEXT, **AttachmentCollector().functions()}
    renderer.render(message, SAMPLE_CONTEXT)  # compile once outside the measure
    return {
        "plain sandbox template (baseline)": timings_us(lambda: baseline.render(variables), renders),
        "budgeted sandbox template": timings_us(lambda: budgeted.render(variables), renders),
        "SopRenderer.render (whole message)": timings_us(lambda: renderer.render(message, SAMPLE_CONTEXT), renders),
    }


def worst_cases(times: int) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for kind, text in WORST.items():
        bundle = load_folder(SOP_DIR).bundles["new_customer_nurture"]
        files = {**bundle.files, "bomb.j2": text}
        renderer = SopRenderer(type(bundle)(bundle.template, bundle.raw, files, bundle.path))
        errors: list[str] = []

        def refused(r: SopRenderer = renderer, out: list[str] = errors) -> None:
            try:
                r.render(Message(file="bomb.j2"), SAMPLE_CONTEXT)
            except SopRenderError as exc:
                out.append(exc.code)

        found[kind] = {**timings_us(refused, times), "refused_as": sorted(set(errors))}
    template = BudgetedSandbox().from_string(NESTED.replace("x", ""))  # silent: the output limit never comes
    kinds: list[str] = []

    def deadline() -> None:
        try:
            render_streamed(template, {}, RenderBudget(steps=10**15))
        except RenderBudgetExceeded as exc:
            kinds.append(exc.kind)

    found["deadline (step limit lifted)"] = {**timings_us(deadline, 3), "refused_as": sorted(set(kinds))}
    return found


async def loop_stall(reload: Callable[[], Any]) -> tuple[float, float]:
    """(seconds the reload took, longest gap in ms between the ticks of a 1 ms ticker meanwhile)."""
    longest = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    start = time.perf_counter()
    result = reload()
    if asyncio.iscoroutine(result):
        await result
    spent = time.perf_counter() - start
    await asyncio.sleep(0.01)
    done.set()
    await task
    return spent, longest * 1000


async def hot_reload() -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "sop"
        shutil.copytree(SOP_DIR, folder)
        (folder / "hostile.yaml").write_text(HOSTILE, encoding="utf-8")
        holder = CatalogHolder(folder)
        out: dict[str, dict[str, float]] = {}
        for name, reload in (
            ("inline on the loop (before)", lambda: holder.reload(force=True)),
            ("worker thread (refresh)", lambda: holder.refresh(force=True)),
        ):
            spent, stall = await loop_stall(reload)
            out[name] = {"reload_s": round(spent, 3), "longest_loop_gap_ms": round(stall, 1)}
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--renders", type=int, default=2000)
    p.add_argument("--worst", type=int, default=20)
    args = p.parse_args()
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "normal_welcome": normal_welcome(args.renders),
        "worst_cases": worst_cases(args.worst),
        "hot_reload": asyncio.run(hot_reload()),
    }
    print(f"normal welcome, {args.renders} renders          median µs    p99 µs    max µs")
    for name, row in result["normal_welcome"].items():
        print(f"  {name:<36} {row['median_us']:>9} {row['p99_us']:>9} {row['max_us']:>9}")
    print(f"worst case until refused, {args.worst} renders     median µs    p99 µs    max µs  refused as")
    for name, row in result["worst_cases"].items():
        refused = ",".join(row["refused_as"])
        print(f"  {name:<36} {row['median_us']:>9} {row['p99_us']:>9} {row['max_us']:>9}  {refused}")
    print("hot reload (shipped folder + hostile template)   reload s   longest loop gap ms")
    for name, row in result["hot_reload"].items():
        print(f"  {name:<40} {row['reload_s']:>9} {row['longest_loop_gap_ms']:>12}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(result, ensure_ascii=False, indent=2)
    for out in (RESULTS_DIR / f"template_budget-{stamp}.json", RESULTS_DIR / "template_budget-latest.json"):
        out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
