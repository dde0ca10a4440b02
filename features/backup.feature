@backup
Feature: Backing up a unit
  A backup is filed under the unit's ID, carries a manifest and passes verification,
  whichever link reaches the unit.

  @target_multispeq
  Scenario Outline: Back up a <target> unit at <version> through <transport>
    Given a <target> unit running <version> reached through <transport>
    And the unit has a distinctive calibration
    When I back up the unit
    Then the backup is filed under the unit's ID with a manifest
    And the backup verifies
    And the backup holds the unit's calibration

    Examples:
      | target    | version | transport |
      | multispeq | 1.17    | serial    |
      | multispeq | 1.17    | visa      |
      | multispeq | 1.15    | serial    |
      | multispeq | 1.11    | serial    |
      | multispeq | 1.10    | serial    |
      | multispeq | 1.06    | serial    |
      | multispeq | 1.05    | serial    |

  @target_multispeq
  Scenario: A blank unit can still be backed up
    Given a blank multispeq unit running 1.17
    When I back up the unit
    Then the backup verifies
    And the backup is flagged "device ID is unset"

  @target_mobiusflow
  Scenario Outline: Back up a mobiusflow node at <version>
    Given a mobiusflow unit running <version>
    And the unit has a distinctive calibration
    When I back up the unit
    Then the backup is filed under the unit's ID with a manifest
    And the backup verifies
    And the backup holds the unit's calibration

    Examples:
      | version |
      | 3021    |
      | 3004    |
      | 1.19.1  |
      | 1.16.4  |

  @target_neuroomnet
  Scenario Outline: Back up a neuroomnet server at <version>
    Given a neuroomnet unit running <version>
    And the unit has a distinctive calibration
    When I back up the unit
    Then the backup is filed under the unit's ID with a manifest
    And the backup verifies
    And the backup holds the unit's calibration

    Examples:
      | version |
      | 3.9.4   |
      | 4.0.2   |
      | 4.2.0   |
      | 5.0.0   |

  @target_planktoscope
  Scenario Outline: Back up a planktoscope unit at <version> over <link>
    Given a planktoscope unit running <version> reached over <link>
    And the unit has a distinctive calibration
    When I back up the unit
    Then the backup is filed under the unit's ID with a manifest
    And the backup verifies
    And the backup holds the unit's calibration
    And every dataset in the backup passes its integrity check

    Examples:
      | version   | link |
      | v2023.9.0 | http |
      | v2024.0.0 | http |
      | v2025.0.0 | http |
      | v2.3      | ssh  |
      | v2026     | ssh  |

  @target_planktoscope
  Scenario Outline: Without SSH, a planktoscope at <version> is backed up without its settings, and says why
    Given a planktoscope unit running <version> reached over http
    When I back up the unit
    Then the backup verifies
    And the backup is flagged "<reason>"
    And every dataset in the backup passes its integrity check

    Examples:
      | version | reason                                        |
      | v2.3    | v2.3 has no file browser                      |
      | v2026   | on v2026 /admin/fs redirects to Cockpit       |

  @target_bactobox
  Scenario Outline: Back up a bactobox unit at <version> to a GMI file
    Given a bactobox unit running <version> reached through http
    And the unit has a distinctive calibration
    When I back up the unit
    Then the backup is filed under the unit's ID with a manifest
    And the backup verifies
    And the backup holds the unit's calibration
    And the backup is named as Access names it

    Examples:
      | version |
      | 2.6.3   |
      | 2.2.0   |

  @target_bactobox
  Scenario: A bactobox backup is refused while a program runs
    Given a bactobox unit running 2.6.3
    And the Measure program is running on the unit
    When I try to back up the unit
    Then the backup is refused because "program_running"
    And no backup is filed
    And the unit started no backup
