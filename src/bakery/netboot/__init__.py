"""Network boot: what a Pi gets over TFTP, and how proxy DHCP points it there."""
