"""The one base of every configuration model: frozen (values are passed down, never changed) and strict about
unknown fields (a misspelt key is an error, not a silently ignored setting)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _in_config_dir(path: Path, info: ValidationInfo) -> Path:
    if path.is_absolute():
        return path
    directory = info.data.get("config_dir")
    return Path(directory) / path if directory is not None else path


# A file a service reads besides its YAML sections: a relative path is relative to --config-dir (ALGO_CONFIG_DIR),
# not to the working directory, so one flag moves the whole configuration. Declare it after `config_dir`.
ConfigFile = Annotated[Path, AfterValidator(_in_config_dir)]
