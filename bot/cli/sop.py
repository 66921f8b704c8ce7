"""``lianyi sop``: SOP template tooling. ``check`` lives here; other modules add commands to :data:`sop`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.settings import BUNDLED_SOP_DIR, DEFAULT_SOP_DIR, ENV_PREFIX
from scrm.folder_check import check_path
from scrm.problems import Problem


class _SopDirSettings(BaseSettings):
    """Only ``LIANYI_SOP_DIR``: checking templates needs no WeCom secrets."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore")

    sop_dir: str = DEFAULT_SOP_DIR


def default_sop_dir() -> Path:
    """``LIANYI_SOP_DIR``, else ``./sop_templates``, else the templates shipped with Lianyi."""
    configured = _SopDirSettings().sop_dir
    path = Path(configured)
    if not path.is_dir() and configured == DEFAULT_SOP_DIR and BUNDLED_SOP_DIR.is_dir():
        return BUNDLED_SOP_DIR  # running outside the checkout: the shipped templates
    return path


def shown_path(path: str) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def problem_line(problem: Problem) -> str:
    """``file:line:col code message``, as ``lianyi sop check`` prints a problem."""
    return f"{shown_path(problem.path)}:{problem.line}:{problem.col} {problem.code} {problem.message}"


@click.group("sop")
def sop() -> None:
    """SOP templates: check, render, dry-run (SOP 模板工具)."""


@sop.command("check")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
def check_command(path: Path | None) -> None:
    """Check SOP templates: a folder or one YAML file (默认 LIANYI_SOP_DIR 或 ./sop_templates).

    Prints ``file:line:col code message`` per problem and exits 1 when there is any.
    """
    target = path or default_sop_dir()
    if not target.exists():
        raise click.UsageError(f"SOP 目录不存在：{target}")
    problems, templates = check_path(target)
    for problem in problems:
        click.echo(problem_line(problem))
    if problems:
        click.echo(f"发现 {len(problems)} 个问题")
        sys.exit(1)
    click.echo(f"检查通过：{templates} 个模板")
