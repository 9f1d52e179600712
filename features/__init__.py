"""Feature definitions and configuration: the bottom layer every other package imports."""

from features.config import ConfigError, KafkaConfig, RedisConfig, SluiceConfig, load_config

__all__ = ["ConfigError", "KafkaConfig", "RedisConfig", "SluiceConfig", "load_config"]
