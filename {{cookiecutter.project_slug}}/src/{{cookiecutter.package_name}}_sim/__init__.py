"""Simulated LLM servers (Ollama, vLLM, llama.cpp, TGI, generic OpenAI) for tests,
benchmarks and the demo.  Nothing in the product imports this package."""

from .app import create_app
from .config import SimConfig
from .engine import Simulator
from .server import SimHandle, running_sim

__all__ = ["SimConfig", "SimHandle", "Simulator", "create_app", "running_sim"]
