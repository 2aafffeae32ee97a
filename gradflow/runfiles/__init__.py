"""Layer 3, run files: the configuration (``config``, its JSON schema
``config_schema``), the run directory (``rundir``), checkpoints
(``checkpoint``), the checks and plan of a resume (``resume``) and reading a finished run
(``run``)."""
