"""The test and operations harness: native TorchServe launcher, load generator, soak, replica failover, the
serving-image runtime check, tiny test checkpoints. Never imported by the tools a user runs; never archived."""
