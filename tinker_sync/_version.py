__version__ = "0.1.0"

# The official SDK version whose API tinker_sync implements: sent as ``sdk_version`` (client/config,
# create_session) and in the X-SDK-Version / X-Stainless-Package-Version headers. The User-Agent
# names tinker-sync itself.
SDK_VERSION = "0.38.0"
