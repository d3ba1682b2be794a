"""What the root ``chrysalis`` command hands to its subcommands: the settings file, and the settings loaded once.

The root callback (:mod:`agent.cli`) checks ``--config`` and :func:`activate` s a :class:`CliContext`: it becomes
the root context's ``ctx.obj`` and, until that context closes, what :func:`current_settings` reads (a context
variable: typer runs its own copy of click, whose current-context stack is not public). A command that needs the
settings calls :func:`current_settings`. Guarantees:

- the settings are loaded when a command first asks for them, not before: ``init``, ``version`` and ``--help`` work
  without any config, and a broken config is reported by the command that reads it (one ``error:`` line and a
  hint, from :func:`agent.settings.load_settings`);
- they are loaded once per command line: every later call returns the same :class:`~agent.settings.Settings`;
- nothing is written to the environment: the file goes to :func:`~agent.settings.load_settings` as an argument,
  so an in-process ``chrysalis --config FILE ...`` leaves no trace for the next settings load;
- a command that runs the agent builds it with :meth:`CliContext.build_agent`: the composition root
  (:func:`agent.app.build_agent`), which the root command hands down, so no command layer imports the layer
  above it.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import typer

from agent.errors import ConfigError
from agent.settings import Settings, config_path, load_settings

if TYPE_CHECKING:  # pragma: no cover
    from agent.pipeline.agent import Agent


class AgentFactory(Protocol):
    """Builds the agent from settings (:func:`agent.app.build_agent`)."""

    def __call__(self, settings: Settings, *, worker_id: str | None = None) -> Agent: ...


def require_config_file(path: Path) -> None:
    """Refuse a ``--config`` file that does not exist (checked when the option is read, before any command runs).

    Args:
        path: The file named on the command line.

    Raises:
        ConfigError: it is not a file; the hint says how to write one.
    """
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", hint="write one with `chrysalis init`")


@dataclass
class CliContext:
    """The root command's state, shared by every subcommand through ``ctx.obj``.

    Attributes:
        config_path: The file named by ``--config`` (None: ``$CHRYSALIS_CONFIG``, else ./chrysalis.toml).
        agent_factory: The composition root (set by the root command).
    """

    config_path: Path | None = None
    agent_factory: AgentFactory | None = None
    _settings: Settings | None = field(default=None, init=False, repr=False)

    def settings(self) -> Settings:
        """The settings, loaded on the first call and the same object after it.

        Raises:
            ConfigError: the file is missing, is not TOML, or holds an invalid value.
        """
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def build_agent(self, settings: Settings, *, worker_id: str | None = None) -> Agent:
        """The agent for ``settings``, from the composition root the root command handed down.

        Raises:
            ConfigError: the command was invoked without the root ``chrysalis`` command.
        """
        if self.agent_factory is None:
            raise ConfigError(
                "this command runs the agent, and was invoked without the root `chrysalis` command",
                hint="run it as `chrysalis ...` (agent.cli.app), which wires the agent",
            )
        return self.agent_factory(settings, worker_id=worker_id)

    def use_config(self, path: Path) -> None:
        """Read ``path`` instead (a subcommand's own ``--config``); settings loaded before are dropped.

        Args:
            path: The settings file.

        Raises:
            ConfigError: ``path`` does not exist.
        """
        require_config_file(path)
        self.config_path = path
        self._settings = None

    def settings_file(self) -> Path | None:
        """The file the settings come from: ``--config``, else ``$CHRYSALIS_CONFIG``, else ./chrysalis.toml if it
        exists (None: defaults and the environment only).

        Raises:
            ConfigError: ``$CHRYSALIS_CONFIG`` names a file that does not exist.
        """
        return self.config_path if self.config_path is not None else config_path()


_active: ContextVar[CliContext | None] = ContextVar("chrysalis_cli_context", default=None)
"""The :class:`CliContext` of the command line running in this thread (set by :func:`activate`)."""


def activate(ctx: typer.Context, cli: CliContext) -> None:
    """Make ``cli`` the command line's context: ``ctx.obj``, and what :func:`current_context` returns until ``ctx``
    closes (at the end of the command line, whether it succeeded or raised).

    Args:
        ctx: The root command's context.
        cli: What the root options said.
    """
    ctx.obj = cli
    token = _active.set(cli)
    ctx.call_on_close(lambda: _active.reset(token))


def current_context() -> CliContext:
    """The running command line's :class:`CliContext` (a new one, with no ``--config``, for a sub-app invoked without
    the root command)."""
    return _active.get() or CliContext()


def current_settings() -> Settings:
    """The settings of the running command line (see :meth:`CliContext.settings`).

    Raises:
        ConfigError: the config is missing, not TOML, or invalid.
    """
    return current_context().settings()
