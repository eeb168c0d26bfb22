"""Chat hub: many people, private chats and shared rooms, one streaming assistant."""

__version__ = "0.1.0"
