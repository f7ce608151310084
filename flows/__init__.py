"""Thin Prefect flows over pipeline/ stages."""
