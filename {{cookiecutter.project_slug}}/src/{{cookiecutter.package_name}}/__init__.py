"""An OpenRouter provider and Tangle blueprint that balances requests across local LLM servers."""

__version__ = {{ cookiecutter.version | tojson }}
