"""Test support shared by ``tests/`` and ``benchmarks/``; not part of the wheel.

- ``graphs``: reference ONNX models built with numpy alone (importable where torch is not installed);
- ``sshd``: a real OpenSSH server on 127.0.0.1 and runtime-only "device" venvs;
- ``pg``: a real PostgreSQL server on 127.0.0.1;
- ``tiny_task``: a tiny digits MLP task that search worker processes load;
- ``jobs``: the measurement jobs run on this host, recorded as they pass.
"""
