"""Simulated Raspberry Pis: boards that boot the way their bootloaders do (proxy DHCP,
the model's TFTP sequence, their NFS root) against a real Bakery, switched through a
relay-board-like HTTP API by Bakery's ``webhook`` power driver. The demo
(``bakery sim run``), the end-to-end tests and the boot-storm benchmark run on them."""
