"""Encrypted inference with securetrain: the server computes on data it never sees.

1. Train the HE-friendly MLP (``he``) on the embedded digits.
2. Server: compile and plan the model for CKKS (``EncryptedModel``); publish its spec
   (parameters and layout, no weights).
3. Client: make keys from the spec; keep the secret key; send the public context and
   encrypted images.
4. Server: evaluate on ciphertexts with the public context only.
5. Client: decrypt and compare with the plaintext model.
6. The same over HTTP on loopback (``start_server`` + ``RemoteClient``).
7. A CryptoNets-shaped CNN (``he-mnist``: conv, square, dense, square, dense) streamed over
   HTTP: the server runs its first three layers on the ciphertexts' residues in numpy (the
   fused residue program) and the rest in SEAL.

Run:  python examples/encrypted_inference.py [--samples 64] [--epochs 5] [--hidden 32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import securetrain
from securetrain.data import load
from securetrain.encrypted import (
    EncryptedInferenceService,
    EncryptedModel,
    EncryptionClient,
    InferenceServer,
    RemoteClient,
    SecretKeyRequiredError,
    decrypt,
    start_server,
)
from securetrain.training import TrainConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64, help="test images to encrypt")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs")
    parser.add_argument("--hidden", type=int, default=32, help="hidden units of the 'he' MLP")
    parser.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    args = parser.parse_args(argv)

    import tempfile

    out = args.out or tempfile.mkdtemp(prefix="securetrain-he-")
    config = TrainConfig(
        data="digits", model="he", model_kwargs={"hidden": args.hidden}, epochs=args.epochs, progress=False
    )
    result = securetrain.train(config, out, write_html=False)
    model = result.model
    x_train, _ = load("digits", "train")
    x_test, y_test = load("digits", "test")
    x = x_test[: args.samples]
    print(f"trained 'he' on digits: plaintext test accuracy {result.report.accuracy:.3f}")

    # --- server side: compile and plan; the spec is public ---
    served = EncryptedModel.build(model, "throughput", calibration=x_train[:512])
    spec = served.spec()
    p = served.plan
    print(
        f"plan: CKKS N={p.poly_modulus_degree}, chain {list(p.coeff_mod_bit_sizes)}, scale 2^{p.scale_bits}, "
        f"depth {p.depth}, {p.security_bits}-bit security"
    )

    # --- client side: keys from the spec; only public bytes leave ---
    client = EncryptionClient(spec)
    public = client.public_context()
    request = client.encrypt(x)

    # --- server side: public context and ciphertexts only ---
    server = InferenceServer(served, public)
    t0 = time.perf_counter()
    response = server.evaluate(request)
    t1 = time.perf_counter()
    try:
        decrypt(server.context, spec, response)
    except SecretKeyRequiredError as exc:
        print(f"server cannot decrypt: {exc}")

    # --- client side: decrypt and compare ---
    logits = client.decrypt(response)
    with torch.no_grad():
        plain = model(x).numpy()
    agreement = float(np.mean(logits.argmax(1) == plain.argmax(1)))
    print(
        f"{x.shape[0]} images: evaluation {t1 - t0:.2f} s on ciphertexts, argmax agreement {agreement:.3f}, "
        f"max |logit error| {np.abs(logits - plain).max():.2e}, encrypted accuracy "
        f"{float(np.mean(logits.argmax(1) == y_test[: x.shape[0]].numpy())):.3f}"
    )
    print(
        f"sizes: public context {len(public) / 1e6:.1f} MB, request {len(request) / 1e6:.1f} MB, "
        f"response {len(response) / 1e6:.1f} MB"
    )

    # --- the same over HTTP ---
    service = EncryptedInferenceService({"throughput": served})
    with start_server(service) as running:
        remote = RemoteClient(running.url)
        over_http = remote.predict(x[:8])
    print(
        f"over HTTP ({running.url}): argmax agreement "
        f"{float(np.mean(over_http.argmax(1) == plain[:8].argmax(1))):.3f} on 8 images"
    )

    # --- a CryptoNets-shaped CNN, streamed: its first layers run on the residues (fused) ---
    cnn_config = TrainConfig(
        data="digits", model="he-mnist", model_kwargs={"kernel_size": 3}, epochs=args.epochs, progress=False
    )
    cnn = securetrain.train(cnn_config, Path(out) / "he-mnist", write_html=False).model
    served_cnn = EncryptedModel.build(cnn, "throughput", calibration=x_train[:512])
    program = "the fused residue program" if served_cnn.fused is not None else "SEAL's evaluator"
    with start_server(EncryptedInferenceService({"throughput": served_cnn})) as running:
        streamed = RemoteClient(running.url).predict(x[:8])  # streams: one ciphertext per pixel
    with torch.no_grad():
        plain_cnn = cnn(x[:8]).numpy()
    cnn_agreement = float(np.mean(streamed.argmax(1) == plain_cnn.argmax(1)))
    print(
        f"he-mnist CNN streamed over HTTP, server on {program}: argmax agreement {cnn_agreement:.3f} "
        f"on 8 images, max |logit error| {np.abs(streamed - plain_cnn).max():.2e}"
    )
    return 0 if agreement == 1.0 and cnn_agreement == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
