import sys

from membot.bot.cli import main

sys.exit(main())
