"""Agents propose the next experiment: a new train.py (or a diff) and a one-line description."""
from .base import Agent, AgentUnavailable, Context, Proposal, make_agent

__all__ = ["Agent", "AgentUnavailable", "Context", "Proposal", "make_agent"]
