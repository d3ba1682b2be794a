"""Publishing: token metadata built, serialised canonically, addressed by its sha256, and read back."""
