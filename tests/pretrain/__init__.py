"""Tests of tinyfed pretrain."""
