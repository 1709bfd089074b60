import importlib.util
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import min_version

min_version("9.0")

# The workflow's code is the reglab package of this checkout (src/). A Snakemake that has no reglab
# installed (e.g. one run with --sdm conda) imports it from there; so do the jobs in the conda
# environment, which holds the dependencies only (workflow/envs/reglab.yaml).
REGLAB_SRC = str(Path(workflow.basedir) / "src")
if importlib.util.find_spec("reglab") is None:
    sys.path.insert(0, REGLAB_SRC)
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(REGLAB_SRC)}; ")


# The default studies, unless the user names their own config with --configfile
# (Snakemake would otherwise merge the two).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/config.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sequential.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/reporting.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT,
        study_figures_all,
