"""Tangle v2: take job calls from the tnt-core contracts and post their results.

`runner.run` is what the blueprint manager starts; `cli.main` holds the operator
tools.  Everything is plain Ethereum JSON-RPC through web3, eth-abi and eth-account.
"""
