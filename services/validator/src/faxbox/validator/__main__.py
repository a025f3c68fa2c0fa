if __name__ == "__main__":
    # Imported here, not at the top: rendering workers start by importing the parent's
    # main module (multiprocessing's forkserver does that), and the service's imports
    # would cost every document about a second.
    from faxbox.validator.service import main

    main()
