# A package, so that its conftest is behaviour.conftest and does not shadow tests/conftest.py
# (test modules do `from conftest import ...`).
