"""An SMTP server for tests: STARTTLS required, then AUTH (PLAIN or LOGIN)
with one user, then every message is written to a directory as N.eml.

Usage: smtp_sink.py PORT DIR CERT KEY USER PASSWORD
Prints "ready" once it accepts connections. Runs until killed.
"""

import asyncio
import os
import ssl
import sys
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(self.directory, f"{self.count}.eml")
        temporary = path + ".part"
        with open(temporary, "wb") as out:
            out.write(f"X-Envelope-To: {','.join(envelope.rcpt_tos)}\r\n".encode())
            out.write(f"X-Authenticated-As: {session.auth_data.login.decode() if session.auth_data else ''}\r\n".encode())
            out.write(envelope.original_content or envelope.content)
        # Renamed when complete, so a reader never sees half a message.
        os.rename(temporary, path)
        return "250 OK"


def main():
    # aiosmtpd warns about an attribute it reads itself.
    warnings.simplefilter("ignore", DeprecationWarning)
    port, directory, cert, key, user, password = sys.argv[1:7]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == user.encode() and auth_data.password == password.encode()
        return AuthResult(success=ok, auth_data=auth_data)

    controller = Controller(
        Sink(directory),
        hostname="127.0.0.1",
        port=int(port),
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
