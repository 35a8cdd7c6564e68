"""CKKS parameter presets for encrypted linear-model inference.

Every preset keeps 128-bit classical security by the HomomorphicEncryption.org
standard table (Albrecht et al., 2018), which SEAL enforces when a context is
made: the total coefficient-modulus bits may not exceed 218 at N=8192 and 109 at
N=4096 (ternary secret, error width 3.2).

The server never rescales (see ``secure_compute.he.evaluate``): each feature
ciphertext at scale 2**scale_bits is multiplied by a weight encoded at the same
scale and the products are summed, so the logit comes back at scale
2**(2 * scale_bits) on the top data level. Two constraints follow:

- precision: inputs and weights are fixed point with step 2**-scale_bits, so the
  logit error grows like (sum_j |x_j| + sum_j |w_j|) * 2**-scale_bits;
- range: the logit times 2**(2 * scale_bits) must stay below half of the data
  modulus (all primes but the last, special one), or it wraps around.
  ``max_abs_output`` keeps a factor of two of margin below that bound.

Measured on breast cancer (StandardScaler + LogisticRegression, 30 features,
569 rows, folded weights up to 258): "standard" max logit error 2e-6, "fast"
max logit error 2e-5, every decision exact with both. The numbers for your own
data come from ``benchmarks/he_bench.py`` and ``tests/secure_compute/test_he.py``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HEPreset:
    """One CKKS parameter set.

    Parameters
    ----------
    name : str
        Name carried in every envelope header.
    poly_modulus_degree : int
        Ring dimension N; one ciphertext packs N / 2 rows.
    coeff_mod_bit_sizes : tuple of int
        Bit sizes of the RNS primes; the last one is SEAL's special prime.
    scale_bits : int
        Inputs and weights are encoded at scale 2**scale_bits.
    """

    name: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    @property
    def slots(self) -> int:
        """Rows packed into one ciphertext."""
        return self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        """Encoding scale of fresh ciphertexts and of the weights."""
        return float(2**self.scale_bits)

    @property
    def data_bits(self) -> int:
        """Bits of the data modulus a fresh ciphertext lives in."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def max_abs_output(self) -> float:
        """Largest logit magnitude that decrypts correctly, with a margin of two."""
        return float(2 ** (self.data_bits - 2 * self.scale_bits - 2))

    @property
    def max_abs_input(self) -> float:
        """Largest feature magnitude a client may encrypt, with a margin of two."""
        return float(2 ** (self.data_bits - self.scale_bits - 2))

    @property
    def max_ciphertext_bytes(self) -> int:
        """Upper bound of one serialized feature or logit vector.

        Two polynomials of N 64-bit words per data prime, uncompressed, plus
        the SEAL and protobuf headers (a few hundred bytes).
        """
        n_data_primes = len(self.coeff_mod_bit_sizes) - 1
        return 2 * self.poly_modulus_degree * n_data_primes * 8 + HEADER_SLACK_BYTES

    @property
    def max_context_bytes(self) -> int:
        """Upper bound of a serialized public context: parameters and public key."""
        n_primes = len(self.coeff_mod_bit_sizes)
        return 2 * self.poly_modulus_degree * n_primes * 8 + HEADER_SLACK_BYTES


#: Room for SEAL headers, parameters and protobuf framing beside the raw words.
HEADER_SLACK_BYTES = 1024

PRESETS: dict[str, HEPreset] = {
    # The parameters: N=8192, 200 of the 218 bits allowed at 128-bit
    # security, scale 2**40. Without rescaling the two 40-bit primes only hold
    # the 2**80 product scale: logits up to 2**58 fit, precision ~1e-6.
    "standard": HEPreset("standard", 8192, (60, 40, 40, 60), 40),
    # Half the ring: 2048 rows a ciphertext, about 1.4x less server time and
    # 40% less upload a row (benchmarks/he_bench.py). 60 + 30 data bits hold
    # the 2**72 product scale with logits up to 2**16; the 19-bit special
    # prime is only used by SEAL to encrypt with the public key (the server
    # never switches keys). 109 bits is exactly the 128-bit bound at N=4096.
    # Precision ~2e-5.
    "fast": HEPreset("fast", 4096, (60, 30, 19), 36),
}

DEFAULT_PRESET = "standard"
