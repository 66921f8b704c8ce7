"""``lianyi emulator``: run the WeCom emulator API, and optionally play a scenario against Lianyi."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import click

from bot.emulator.callbacks import CallbackDriver
from bot.emulator.scenario import Scenario, ScenarioError, build_state, load_scenario, plan_steps, run_scenario
from bot.emulator.server import start_emulator
from bot.emulator.state import EmulatorState
from bot.logs import configure_logging
from bot.settings import Settings, load_settings
from scrm.errors import SettingsError


def _settings(required: bool) -> Settings | None:
    try:
        return load_settings()
    except SettingsError as exc:
        if required:
            raise click.ClickException(f"--callback-url 需要回调配置：{exc}") from None
        return None


async def _play(
    state: EmulatorState, settings: Settings, url: str, scenario: Scenario, seed: int | None, concurrency: int
) -> None:
    async with aiohttp.ClientSession() as http:
        driver = CallbackDriver(
            url,
            settings.callback_token,
            settings.callback_aes_key,
            state.corp_id,
            http=http,
            agent_id=str(settings.agent_id),
        )
        try:
            verified = await driver.verify_url()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise click.ClickException(f"回调地址 {url} 无法访问：{exc}") from None
        click.echo(f"回调地址校验（GET echostr）：{'通过' if verified else '未通过'}")
        steps = plan_steps(scenario, state, seed)
        click.echo(f"开始回放脚本：{len(steps)} 个动作，并发 {concurrency}")
        report = await run_scenario(state, driver, steps, concurrency=concurrency)
    click.echo(
        f"回放完成：{report.steps} 个动作，回调成功 {report.callbacks_ok}，失败 {report.callbacks_failed}，"
        f"共 {report.attempts} 次投递，用时 {report.elapsed:.1f} 秒"
    )
    for line in report.delivery_errors[:10]:
        click.echo(f"  投递失败：{line}")
    for line in report.world_errors[:10]:
        click.echo(f"  动作无法执行：{line}")
    click.echo("按动作统计：" + json.dumps(dict(sorted(report.by_action.items())), ensure_ascii=False))


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the emulator API listens on.")
@click.option("--port", default=9080, show_default=True, type=int, help="Port of the emulator API.")
@click.option("--scenario", "scenario_path", default=None, type=click.Path(dir_okay=False), help="Scenario YAML.")
@click.option("--callback-url", default=None, help="Lianyi's callback URL; plays the scenario's script against it.")
@click.option("--seed", default=None, type=int, help="Seed of the script (default: the scenario's).")
@click.option("--concurrency", default=None, type=int, help="Callbacks in flight (default: the scenario's).")
@click.option("--prefill", is_flag=True, help="Without --callback-url: apply the script to the world silently.")
@click.option("--exit", "exit_after", is_flag=True, help="Stop after the script instead of serving on.")
def emulator_command(
    host: str,
    port: int,
    scenario_path: str | None,
    callback_url: str | None,
    seed: int | None,
    concurrency: int | None,
    prefill: bool,
    exit_after: bool,
) -> None:
    """Run the WeCom emulator (the only stand-in for WeCom in tests, the demo and benchmarks)."""
    try:
        scenario = load_scenario(scenario_path)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None
    settings = _settings(required=callback_url is not None)
    configure_logging(settings.log_level if settings else "INFO", json_lines=settings.log_json if settings else False)
    lanes = concurrency or scenario.concurrency

    async def main() -> None:
        state = build_state(scenario, corp_id=settings.corp_id if settings else None)
        if settings is not None and settings.app_secret:
            state.add_app(settings.app_secret, settings.agent_id)
        running = await start_emulator(state, host, port)
        try:
            click.echo(
                f"企业微信模拟器已启动：{running.base_url}（企业 ID {state.corp_id}，"
                f"{len(state.dealers)} 家经销商，{len(state.staff)} 名员工，"
                f"{sum(1 for _ in state.all_tags())} 个企业标签）"
            )
            click.echo(f"请设置 LIANYI_WECOM_API_BASE={running.base_url}")
            if callback_url and settings is not None:
                await _play(state, settings, callback_url, scenario, seed, lanes)
            elif prefill:
                report = await run_scenario(state, None, plan_steps(scenario, state, seed), concurrency=lanes)
                click.echo(f"已预置数据：{report.steps} 个动作（未发送回调）")
            if exit_after:
                click.echo("接口调用统计：" + json.dumps(state.counters.as_dict(), ensure_ascii=False))
                return
            click.echo("模拟器运行中，按 Ctrl-C 停止")
            await asyncio.Event().wait()
        finally:
            await running.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        click.echo("模拟器已停止")
