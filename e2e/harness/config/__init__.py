"""Pure generators: command lines, configuration files, kubeconfigs, the PKI plan and the
fingerprint of a running cluster, each a function of `Settings` (unit-tested)."""
