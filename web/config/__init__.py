"""Configuration: the built-in catalogue (`catalogue.py`), the settings' types (`settings.py`), what
the TOML file may say (`schema.py`), the file and the environment read into the settings
(`loading.py`, `values.py`), and provider discovery (`discovery.py`)."""

from relaybox.web.config.discovery import probe_ollama
from relaybox.web.config.loading import load_settings
from relaybox.web.config.settings import ConfigError, ProviderConfig, Settings, default_data_dir, is_loopback

__all__ = [
    "ConfigError",
    "ProviderConfig",
    "Settings",
    "default_data_dir",
    "is_loopback",
    "load_settings",
    "probe_ollama",
]
