"""Configuration of one turnlog process: where its data lives, which engines it runs on."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Settings:
    data_dir: Path = Path(".turnlog")
    engine: str = "cpu"  # cpu | scripted
    token_delay_ms: float = 0.0  # scripted engine only
    answer_tokens: int = 20  # scripted engine only
    max_output_tokens: int = 256
    run_lease_s: float = 30.0
    heartbeat_s: float = 5.0
    host: str = "127.0.0.1"
    port: int = 8000

    @property
    def log_path(self) -> Path:
        return self.data_dir / "log.db"

    @property
    def read_models_path(self) -> Path:
        return self.data_dir / "read-models"
