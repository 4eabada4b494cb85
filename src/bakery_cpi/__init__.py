"""The BOSH CPI for Bakery (talks to Bakery over HTTP only)."""
