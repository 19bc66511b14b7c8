"""What one signature and one verification cost, in process, with no Temporal server.

    python bench/signature_bench.py [--n 2000] [--data-dir DIR]

Each figure is the median of N single calls timed with `time.perf_counter` (microseconds):

- `seal`: relman signing a vote (its statement, canonical bytes, Ed25519 signature, the
  proof attached to a copy of the vote), against a raw `cryptography` Ed25519 sign of the
  same statement bytes;
- `proof_problem`: relman verifying that vote (nonce, clock, the actor's keys from the
  catalog's trust, the statement rebuilt, the signature), against a raw `cryptography`
  Ed25519 verify of those bytes with a key object at hand;
- `policy.refusal`: the whole check `decide`'s validator (and again its handler) runs on a
  vote at an open CAB gate, signed, against the same vote unsigned under a trust with
  `signatures: off`.

bench/release_bench.py runs `measure` too and puts the figures into its table. The keys are
the catalog's people's, made in `--data-dir` (a temporary directory by default).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import noop

from relman.contracts import Decision, Gate, ReleaseRequest, ServiceProfile, Vote
from relman.identity.keys import Signer
from relman.identity.signing import seal
from relman.identity.verify import proof_problem
from relman.workflows import policy

APPROVER = "alice"
REQUESTER = "rita"


@dataclass
class Costs:
    """Median microseconds per call."""

    n: int
    raw_sign: float
    seal: float
    raw_verify: float
    proof_problem: float
    refusal_unsigned: float
    refusal_signed: float


def median_us(fn: Callable[[], Any], n: int) -> float:
    fn()  # warm: imports, pydantic schemas, OpenSSL
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def measure(profile: ServiceProfile, signers: dict[str, Signer], n: int = 2000) -> Costs:
    signer = signers[APPROVER]
    release_id = "bench-rel-sig-0"
    request = ReleaseRequest(
        service=profile.service,
        version="3.0.0",
        requested_by=REQUESTER,
        title="signature bench",
        commit="0a1b2c3d4e5f",
    )
    subject = request.content_hash()
    vote = Vote(gate=Gate.REQUEST, approver=APPROVER, decision=Decision.APPROVE, approved_hash=subject)
    sealed = seal(vote, release_id, signer)
    assert sealed.proof is not None
    message = vote.statement(release_id, sealed.proof.issued_at, sealed.proof.nonce).canonical()
    signature = signer.private.sign(message)
    public = signer.private.public_key()
    now = datetime.now(UTC)
    # A release has seen a few signed messages by the time its CAB votes arrive.
    seen = frozenset(secrets.token_hex(16) for _ in range(4))

    def check() -> None:
        problem = proof_problem(
            sealed, actor=APPROVER, release_id=release_id, trust=profile.trust, now=now, seen_nonces=seen
        )
        assert problem is None, problem

    gate = policy.open_gate(Gate.REQUEST, request.change_type, profile, subject, now)
    signed_ctx = policy.Context(release_id, profile.service, REQUESTER, profile.trust, now, seen)
    off_trust = profile.trust.model_copy(update={"signatures": "off"})
    off_ctx = policy.Context(release_id, profile.service, REQUESTER, off_trust, now, seen)

    def refusal(v: Vote, ctx: policy.Context) -> Callable[[], None]:
        def run() -> None:
            problem = policy.refusal(gate, v, ctx)
            assert problem is None, problem

        return run

    return Costs(
        n=n,
        raw_sign=median_us(lambda: signer.private.sign(message), n),
        seal=median_us(lambda: seal(vote, release_id, signer), n),
        raw_verify=median_us(lambda: public.verify(signature, message), n),
        proof_problem=median_us(check, n),
        refusal_unsigned=median_us(refusal(vote, off_ctx), n),
        refusal_signed=median_us(refusal(sealed, signed_ctx), n),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="calls per figure (median)")
    parser.add_argument("--data-dir", help="where the people's keys go (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relman-sig-bench-") as tmp:
        data_dir = Path(args.data_dir or tmp)
        signers = noop.bench_signers(data_dir)
        costs = measure(noop.bench_profile(data_dir), signers, args.n)
    print(f"median of {costs.n} calls, microseconds:")
    print(f"  sign:   raw Ed25519 {costs.raw_sign:7.1f}   seal          {costs.seal:7.1f}")
    print(f"  verify: raw Ed25519 {costs.raw_verify:7.1f}   proof_problem {costs.proof_problem:7.1f}")
    print(
        f"  policy.refusal of a CAB vote: signatures off {costs.refusal_unsigned:7.1f}"
        f"   signed {costs.refusal_signed:7.1f}"
    )


if __name__ == "__main__":
    main()
