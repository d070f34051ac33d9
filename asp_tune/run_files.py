"""Names of the files a `train` run writes beside its summary (read back by `inspect`)."""

MODEL_FILE = "model.pt"
SAMPLES_FILE = "samples.csv"
TRAJECTORIES_FILE = "trajectories.csv"
