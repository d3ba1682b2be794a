"""Artefacts shipped with Chrysalis (package data)."""
