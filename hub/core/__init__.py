"""The hub's core: sessions, channels, rooms, the assistant runner, resume. No aiohttp here."""
