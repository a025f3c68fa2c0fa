from faxbox.webhooks.service import Settings, run

if __name__ == "__main__":
    run(Settings())
