"""Shipped artifact of the embedded complexity judge (see ``NOTICE.txt``)."""
