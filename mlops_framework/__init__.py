"""mlops-framework: declarative, config-driven MLOps for teams whose data lives in Snowflake."""

__version__ = "0.1.0"
