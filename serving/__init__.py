"""The engine-free serving core (core.py): the JSON, text and OpenAI APIs over a model.chatbot.Chatbot, for any
engine's adapter (TorchServe's handler, the KServe runtime). wire.py: requests, error kinds and their bodies;
openai_api.py: the OpenAI Chat Completions mapping and its stream events. Shipped inside the .mar."""
