# Prepare one dataset into results/data/<name>.npz (see batchlab.data): a registered one from its files or
# generator (verified against the publishers' checksums), or one of the user's own by its loader, checked
# against its declaration (rule prepare_user_dataset, see batchlab.builders).
from batchlab import data
from batchlab.logs import setup_logging
import logging

setup_logging(snakemake.log[0])
shapes = data.prepare(
    snakemake.wildcards.dataset,
    snakemake.params.options,
    snakemake.params.data_dir,
    snakemake.output[0],
    verify=snakemake.params.get("verify", True),
    declaration=snakemake.params.get("declaration"),
)
logging.getLogger("batchlab.data").info("prepared %s: %s", snakemake.wildcards.dataset, shapes)
