"""Tools for a person with a board on the desk: ``tinyfed board selftest`` and ``flash``."""
