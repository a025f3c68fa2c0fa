from faxbox.mail_poller.service import main

if __name__ == "__main__":
    main()
