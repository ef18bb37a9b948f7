"""Configuration: a TOML file plus environment variables, validated.

A settings file looks like this (every section and key is optional)::

    [stream]
    judge = "auto"              # auto | embedded | transformer | keyword | llm | cascade
    allow_cloud = true
    high_threshold = 0.0        # escalate to HIGH only when P(HIGH) >= this (0 = off)

    [local]                     # a file with [hpc] or [cloud] and no [local] has no local tier
    enabled = true              # false: no local tier
    provider = "ollama"         # ollama | llamacpp (the bundled model, in-process)
    model = "llama3.2:3b"
    base_url = "http://localhost:11434"
    context_window = 32768      # tokens; output_reserve of them are kept for the answer
                                # (ollama: at most the model's trained length, sent as num_ctx)
    cold_load_timeout_s = 300   # ollama: first token of a model that is not loaded yet
    output_reserve = 4096
    vision = false              # takes images (default: the model's LangChain profile)
    tools = true                # calls tools (default: the model's LangChain profile)

    [hpc]
    endpoint_id = "..."         # Globus Compute endpoint
    relay_url = "wss://relay.example.edu"
    relay_urls = ["wss://relay2.example.edu"]   # more relays (failover before the first token)
    endpoint_ids = ["..."]      # more endpoints (a task not started in time moves on)
    relay_secret_env = "STREAM_RELAY_SECRET"
    backend_url = "http://127.0.0.1:8000/v1"
    model = "meta-llama/Llama-3.3-70B-Instruct"
    mode = "stream"             # or "batch" (whole answer through Globus Compute)
    vision = true               # e.g. a Qwen2.5-VL node: requests with images may go here

    [cloud]
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"   # the NAME of the variable holding the key

    [context]
    fitter = "memory"           # memory (recall + background summary) | summarize (previous)
    summarizer = "local"        # local | hpc (that tier's model writes summaries) | none
    wait_s = 0.25               # longest a request waits for a summary being written
    trigger = 0.8               # summarize past this fraction of (window - output_reserve)
    keep_turns = { local = 3, hpc = 6, cloud = 6 }   # earlier turns kept verbatim
    summary_tokens = 256        # a summary's cap
    image_tokens = 765          # tokens counted per image (an estimate)
    cache_path = ""             # SQLite file shared by processes ("" = in-process LRU)

    [routing]
    failure_threshold = 3
    failure_window_s = 60
    cooldown_s = 30

    [proxy.globus]              # `stream proxy --auth keys,globus` (see docs/globus.md)
    client_id = "..."           # the proxy's Globus Auth client (resource server)
    client_secret_env = "STREAM_GLOBUS_CLIENT_SECRET"
    allowed_domains = ["uchicago.edu"]
    required_scope = "https://auth.globus.org/scopes/<client_id>/inference"   # optional
    required_group = "..."      # optional Globus group id
    admin_identities = ["ops@uchicago.edu"]   # usernames or identity ids (optional)

    [shared]                    # replicas share limits, revocation, breakers (docs/scaling.md)
    redis_url = "redis://127.0.0.1:6379/0"   # unset: each process keeps its own

    [budget]
    cloud_usd = 5.0
    [budget.prices."gpt-4o-mini"]
    input = 0.15                # USD per million tokens
    output = 0.60

Environment variables override the file: ``STREAM_ALLOW_CLOUD``, ``STREAM_JUDGE``,
``STREAM_LOCAL_MODEL``, ``STREAM_LOCAL_BASE_URL``, ``STREAM_CLOUD_BASE_URL``,
``STREAM_CLOUD_MODEL``, ``STREAM_CLOUD_API_KEY_ENV``, ``STREAM_HPC_ENDPOINT_ID``,
``STREAM_HPC_RELAY_URL``. ``STREAM_CONFIG`` names the file when none is given.

Keys themselves never live in the file: it names the environment variable that holds them.

Example:
    >>> s = Settings.load({"cloud": {"model": "gpt-4o-mini"}}, env={})
    >>> s.cloud.model, s.cloud.api_key_env, s.local.provider
    ('gpt-4o-mini', 'OPENAI_API_KEY', 'ollama')
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from stream_langchain.errors import SettingsError

__all__ = [
    "BudgetSettings",
    "CloudSettings",
    "ContextSettings",
    "GlobusSettings",
    "HPCSettings",
    "LocalSettings",
    "ProxySettings",
    "RoutingSettings",
    "Settings",
    "SettingsError",
    "SharedSettings",
    "StreamSection",
    "default_config_path",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StreamSection(_Section):
    judge: Literal["auto", "embedded", "transformer", "keyword", "llm", "cascade"] = "auto"
    """Which complexity judge routes requests: ``auto`` is the embedded classifier asking the
    fine-tuned transformer when unsure (:func:`~stream_langchain.judges.default_judge`);
    ``embedded`` and ``transformer`` use one of them alone."""
    allow_cloud: bool = True
    """``False`` guarantees nothing is sent to the cloud tier."""
    high_threshold: float = Field(0.0, ge=0.0, le=1.0)
    """Cost-quality knob: a HIGH label is kept only when P(HIGH) >= this (0 disables)."""
    cascade_threshold: float = Field(0.5, ge=0.0, le=1.0)
    """With ``judge = "cascade"``: ask the LLM judge when the embedded judge is less sure."""


class LocalSettings(_Section):
    enabled: bool = True
    """``False``: no local tier. A settings file that configures ``[hpc]`` or ``[cloud]``
    and has no ``[local]`` section gets none either (no default Ollama at localhost for
    every LOW query to try first)."""
    provider: Literal["ollama", "llamacpp"] = "ollama"
    model: str = "llama3.2:3b"
    base_url: str = "http://localhost:11434"
    context_window: int = Field(32768, gt=0)
    """Context window in tokens (the paper's 32K). With Ollama, the ceiling of the window
    learned from the server: a model trained on less uses its trained length, and the window
    is sent as ``num_ctx`` with every request (Ollama would silently truncate at its default,
    4096)."""
    output_reserve: int = Field(4096, ge=0)
    """Tokens of the window kept for the answer; prompts are fitted to the rest."""
    temperature: float = Field(0.7, ge=0.0)
    max_tokens: int = Field(1024, gt=0)
    """Upper bound on a local answer's length."""
    first_token_timeout_s: float = Field(60.0, gt=0)
    """Ollama: the wait for a loaded model's first (and each next) piece of answer."""
    cold_load_timeout_s: float = Field(300.0, gt=0)
    """Ollama: the same wait when the model is not loaded (the first request after
    ``keep_alive`` expired loads the weights first)."""
    vision: bool | None = None
    """Whether this tier takes image parts (``None``: as the model's LangChain profile says;
    unknown means no images are sent here)."""
    tools: bool | None = None
    """Whether this tier calls tools (``None``: as the model's LangChain profile says)."""


class HPCSettings(_Section):
    endpoint_id: str | None = None
    """Globus Compute endpoint UUID; the HPC tier is enabled when this is set."""
    amqp_port: int = Field(443, gt=0)
    task_group_id: str | None = None
    relay_url: str | None = None
    relay_urls: list[str] = Field(default_factory=list)
    """More relays (same secret, no shared state): a healthy one is picked per request and a
    relay that cannot be reached before the first token moves the request to the next."""
    endpoint_ids: list[str] = Field(default_factory=list)
    """More Globus Compute endpoints: a task not started within ``queue_timeout_s`` moves to
    the next one before the first token."""
    relay_secret_env: str = "STREAM_RELAY_SECRET"  # noqa: S105 (a variable name, not a secret)
    backend_url: str = "http://127.0.0.1:8000/v1"
    model: str = "meta-llama/Llama-3.3-70B-Instruct"
    context_window: int | None = Field(None, gt=0)
    """Context window in tokens (default: the model's profile when it has one, else the
    paper's 64K)."""
    output_reserve: int = Field(4096, ge=0)
    """Tokens of the window kept for the answer."""
    max_tokens: int = Field(2048, gt=0)
    queue_timeout_s: float = Field(300.0, gt=0)
    first_token_timeout_s: float = Field(120.0, gt=0)
    idle_timeout_s: float = Field(60.0, gt=0)
    batch_timeout_s: float = Field(900.0, gt=0)
    mode: Literal["stream", "batch"] = "stream"
    """``stream``: tokens through the relay; ``batch``: the whole answer through Globus
    Compute (the paper's baseline)."""
    batch_fallback: bool = True
    """Fall back to batch mode when the relay cannot be reached."""
    vision: bool | None = None
    """Whether this tier takes image parts (``None``: as the model's LangChain profile says;
    unknown means no images are sent here)."""
    tools: bool | None = None
    """Whether this tier calls tools (``None``: as the model's LangChain profile says)."""

    @property
    def enabled(self) -> bool:
        return self.endpoint_id is not None or bool(self.endpoint_ids)


class CloudSettings(_Section):
    base_url: str | None = None
    model: str | None = None
    """The cloud tier is enabled when a model is set."""
    api_key_env: str = "OPENAI_API_KEY"
    context_window: int | None = Field(None, gt=0)
    """Context window in tokens (default: the model's LangChain profile, for example 128000
    for gpt-4o-mini, else 128000)."""
    output_reserve: int = Field(4096, ge=0)
    """Tokens of the window kept for the answer."""
    temperature: float = Field(0.7, ge=0.0)
    max_tokens: int = Field(2048, gt=0)
    vision: bool | None = None
    """Whether this tier takes image parts (``None``: as the model's LangChain profile says;
    unknown means no images are sent here)."""
    tools: bool | None = None
    """Whether this tier calls tools (``None``: as the model's LangChain profile says)."""

    @property
    def enabled(self) -> bool:
        return self.model is not None

    def api_key(self, env: Mapping[str, str] | None = None) -> SecretStr:
        """The key, read from the named environment variable.

        Raises:
            SettingsError: the variable is unset or empty (names the variable, never a value).
        """
        source = os.environ if env is None else env
        value = source.get(self.api_key_env, "")
        if not value:
            raise SettingsError(
                f"cloud tier is configured (model {self.model!r}) but the environment "
                f"variable {self.api_key_env} that should hold its API key is unset or empty"
            )
        return SecretStr(value)


class ContextSettings(_Section):
    """How long conversations are fitted to each tier (:mod:`stream_langchain.context`)."""

    fitter: Literal["memory", "summarize"] = "memory"
    """``memory``: fill the budget with recent turns, recalled earlier turns and a summary
    written in the background (:class:`~stream_langchain.context.MemoryFitter`);
    ``summarize``: the previous fitter, older turns summarized on the request path."""
    summarizer: Literal["local", "hpc", "none"] = "local"
    """Which tier's model writes summaries of older turns (``hpc``: its bigger model, when
    there is one); ``none``: no fitting (tiers whose window is too small are skipped)."""
    wait_s: float = Field(0.25, ge=0.0, le=10.0)
    """The longest a request waits for a summary being written (memory fitter)."""
    recall_share: float = Field(0.35, ge=0.0, lt=1.0)
    """Part of the room kept for recalled earlier turns before recent turns take the rest."""
    watermark: float = Field(0.6, gt=0.0, le=1.0)
    """After an answer, a summary is prepared once the history passes this part of the
    budget (memory fitter)."""
    trigger: float = Field(0.8, gt=0.0, le=1.0)
    """Summarize once a conversation passes this fraction of (window - output_reserve)
    (``summarize`` fitter)."""
    keep_turns: dict[Literal["local", "hpc", "cloud"], int] = Field(
        default_factory=lambda: {"local": 3, "hpc": 6, "cloud": 6})  # type: ignore[arg-type]
    """Per tier, earlier turns kept verbatim (the latest user turn always is)."""
    summary_tokens: int = Field(256, ge=16)
    """A summary's token cap."""
    image_tokens: int = Field(765, ge=0)
    """Tokens counted per image part when fitting contexts (an estimate)."""
    chunk_tokens: int = Field(4096, ge=64)
    """Most conversation tokens sent to the summarizer in one call (fewer when the
    summarizer's window requires it)."""
    timeout_s: float = Field(120.0, gt=0)
    """A summarizer call slower than this counts as failed (the context is truncated)."""
    token_margin: float = Field(1.15, ge=1.0)
    """Safety factor on cl100k counts for tiers whose own tokenizer is unknown."""
    cache_path: str = ""
    """SQLite file for summaries, shared by processes (``""``: in-process LRU)."""
    cache_size: int = Field(4096, ge=1)
    """Entries kept by the in-process cache."""


class RoutingSettings(_Section):
    failure_threshold: int = Field(3, ge=1)
    failure_window_s: float = Field(60.0, gt=0)
    cooldown_s: float = Field(30.0, gt=0)


class Price(_Section):
    input: float = Field(ge=0.0)
    output: float = Field(ge=0.0)


class BudgetSettings(_Section):
    cloud_usd: float = Field(float("inf"), ge=0.0)
    prices: dict[str, Price] = Field(default_factory=dict)


class GlobusSettings(_Section):
    """Globus identities on the proxy (:class:`~stream_langchain.proxy.globus.GlobusAuth`)."""

    client_id: str
    """The proxy's Globus Auth client id: the resource server tokens must be issued for."""
    client_secret_env: str = "STREAM_GLOBUS_CLIENT_SECRET"  # noqa: S105 (a variable name)
    """The NAME of the environment variable holding the client secret."""
    allowed_domains: tuple[str, ...] = Field(min_length=1)
    """A linked identity's username must end in ``@`` one of these (``uchicago.edu``)."""
    required_scope: str | None = None
    """A scope the token must carry (default: its audience must include ``client_id``)."""
    required_group: str | None = None
    """A Globus group id the user must be an active member of."""
    admin_identities: tuple[str, ...] = ()
    """Usernames or identity ids with admin rights (``/v1/admin/usage``)."""
    admin_groups: tuple[str, ...] = ()
    """Globus group ids whose members have admin rights."""
    cache_s: float = Field(60.0, gt=0.0, le=600.0)
    """Longest an introspection verdict is reused (never past the token's expiry)."""
    timeout_s: float = Field(10.0, gt=0.0)
    """HTTP timeout of one call to Globus Auth or Groups."""

    def client_secret(self, env: Mapping[str, str] | None = None) -> SecretStr:
        """The secret, read from ``client_secret_env``.

        Raises:
            SettingsError: the variable is unset or empty (names it, never a value).
        """
        source = os.environ if env is None else env
        value = source.get(self.client_secret_env, "")
        if not value:
            raise SettingsError(
                f"[proxy.globus] is configured (client {self.client_id}) but the environment "
                f"variable {self.client_secret_env} that should hold its client secret is "
                "unset or empty")
        return SecretStr(value)


class ProxySettings(_Section):
    """``stream proxy``'s settings."""

    globus: GlobusSettings | None = None
    """Globus sign-in (``--auth globus``); ``None``: not configured."""


class SharedSettings(_Section):
    """State shared by proxy replicas (``[shared]``); unset: each process keeps its own."""

    redis_url: str | None = None
    """``redis://`` URL: rate limits, key revocation and circuit breakers shared through Redis."""


class Settings(_Section):
    """The whole configuration. Build with :meth:`load`."""

    stream: StreamSection = StreamSection()
    local: LocalSettings = LocalSettings()
    hpc: HPCSettings = HPCSettings()
    cloud: CloudSettings = CloudSettings()
    context: ContextSettings = ContextSettings()
    routing: RoutingSettings = RoutingSettings()
    budget: BudgetSettings = BudgetSettings()
    proxy: ProxySettings = ProxySettings()
    shared: SharedSettings = SharedSettings()
    source: str | None = None
    """Where the settings came from (file path), for error messages."""

    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Read settings from a TOML file path or a dict, then apply environment overrides.

        Args:
            source: a path to a TOML file, a dict of the same shape, or ``None`` for the
                file named by ``STREAM_CONFIG`` (or no file).
            env: the environment (``os.environ`` by default).

        Raises:
            SettingsError: unreadable file, invalid TOML, unknown key, wrong type.
        """
        environ = os.environ if env is None else env
        origin: str | None = None
        if source is None and environ.get("STREAM_CONFIG"):
            source = environ["STREAM_CONFIG"]
        if source is None:
            data: dict[str, Any] = {}
        elif isinstance(source, Mapping):
            data = _deep_copy(source)
            origin = "<dict>"
        else:
            path = Path(source)
            origin = str(path)
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from exc
            try:
                data = tomllib.loads(raw.decode("utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from exc
        _apply_env(data, environ)
        if origin is not None and "local" not in data and ("hpc" in data or "cloud" in data):
            data["local"] = {"enabled": False}  # a settings file that leaves it out
        try:
            return cls.model_validate({**data, "source": origin})
        except ValidationError as exc:
            raise SettingsError(_explain(exc, origin)) from None


_ENV_MAP: dict[str, tuple[str, str]] = {
    "STREAM_ALLOW_CLOUD": ("stream", "allow_cloud"),
    "STREAM_JUDGE": ("stream", "judge"),
    "STREAM_LOCAL_MODEL": ("local", "model"),
    "STREAM_LOCAL_BASE_URL": ("local", "base_url"),
    "STREAM_CLOUD_BASE_URL": ("cloud", "base_url"),
    "STREAM_CLOUD_MODEL": ("cloud", "model"),
    "STREAM_CLOUD_API_KEY_ENV": ("cloud", "api_key_env"),
    "STREAM_HPC_ENDPOINT_ID": ("hpc", "endpoint_id"),
    "STREAM_HPC_RELAY_URL": ("hpc", "relay_url"),
}


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, (section, key) in _ENV_MAP.items():
        if var in env:
            sec = data.setdefault(section, {})
            if not isinstance(sec, dict):
                raise SettingsError(f"settings section [{section}] must be a table")
            sec[key] = env[var]


def _deep_copy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def _explain(exc: ValidationError, origin: str | None) -> str:
    where = f"settings {origin}" if origin else "settings"
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}")
        else:
            parts.append(f"{loc}: {err['msg']}")
    return f"invalid {where}: " + "; ".join(parts)


def default_config_path(env: Mapping[str, str] | None = None) -> Path | None:
    """The settings file the CLI uses: ``$STREAM_CONFIG``, ``./stream.toml`` or
    ``~/.config/stream/stream.toml``, whichever exists first; ``None`` if none does."""
    environ = os.environ if env is None else env
    candidates = []
    if environ.get("STREAM_CONFIG"):
        candidates.append(Path(environ["STREAM_CONFIG"]))
    candidates += [Path("stream.toml"), Path.home() / ".config" / "stream" / "stream.toml"]
    for p in candidates:
        if p.is_file():
            return p
    return None
