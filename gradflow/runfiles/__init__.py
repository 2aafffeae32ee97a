"""Layer 3, run files: the configuration (``config``, its JSON schema ``config_schema``, TOML
output ``toml_writer``, the path policy ``paths``), the run directory (``rundir``), checkpoints
(``checkpoint``), the checks and plan of a resume (``resume``) and reading a finished run
(``run``)."""
