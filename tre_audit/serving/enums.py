from django.db import models


class EndpointKind(models.TextChoices):
    HE = "he", "Homomorphic encryption (CKKS)"
    ENCLAVE = "enclave", "Attested enclave (simulated)"
    MPC = "mpc", "Two-party secure inference (CrypTen, with a dealer)"


class EndpointStatus(models.TextChoices):
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped"
    FAILED = "failed", "Failed"


class MpcSessionStatus(models.TextChoices):
    OPEN = "open", "Open"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
