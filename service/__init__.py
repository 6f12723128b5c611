"""kasp's adapters: Sanic HTTP, the asyncio worker pool, configuration and storage."""
