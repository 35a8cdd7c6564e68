from django.db import models


class EndpointKind(models.TextChoices):
    HE = "he", "Homomorphic encryption (CKKS)"
    ENCLAVE = "enclave", "Attested enclave (simulated)"


class EndpointStatus(models.TextChoices):
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped"
    FAILED = "failed", "Failed"
