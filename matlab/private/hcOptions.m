function options = hcOptions(caller)
    % HCOPTIONS  The name-value options of a hessiancore function: names, defaults and what is allowed (internal).
    %   OPTIONS = HCOPTIONS(CALLER) is an Mx4 cell, one row {Name, Default, Kind, Choices} per option of the
    %   public function CALLER ('dlhessian', 'dlhvp', 'dlhessianDiag', 'dlhessianEigs', 'dlhessianTrace',
    %   'dlnewtonUpdate', 'dlhessianPlan', 'hessiancoreSetup'). Kind says what a value may be (hcCheckOption):
    %     'choice'   text, one of Choices (case-insensitive)   'text'     any text (char or string scalar)
    %     'struct'   a scalar struct                          'count'    an integer >= 1
    %     'seed'     [] or an integer >= 0                     'nonneg'   a finite number >= 0
    %     'positive' a finite number > 0                       'budget'   [], bytes > 0, or text like '2GB'
    %     'logical'  true or false                           'function' [] or a function handle
    %   The one list of the toolbox's options: hcParseOptions parses with it, and a test checks it against
    %   resources/functionSignatures.json and the Python bridge (bridge/entrypoints.py, bridge/losses.py).
    losses = {'mse', 'l2loss', 'l1loss', 'huber', 'crossentropy', 'binary-crossentropy', 'index-crossentropy'};
    transports = {'auto', 'subprocess', 'py', 'server'};
    common = {'Loss', '', 'choice', losses
              'LossOptions', struct(), 'struct', {}
              'DataFormat', '', 'text', {}
              'TargetFormat', '', 'text', {}
              'DataType', 'double', 'choice', {'double', 'single'}
              'MemoryBudget', [], 'budget', {}
              'Transport', 'auto', 'choice', transports
              'Python', '', 'text', {}
              'PythonOptions', struct(), 'struct', {}
              'ModelLoss', [], 'function', {}
              'Backend', 'auto', 'choice', {'auto', 'python', 'matlab'}};
    output = {'Output', 'matrix', 'choice', {'matrix', 'table'}};
    switch caller
        case {'dlhessian', 'dlhvp', 'dlhessianDiag'}
            options = [common; output];
        case 'dlhessianPlan'
            options = common;
        case 'dlhessianEigs'
            which = {'largest', 'smallest', 'largestabs', 'bothends', 'LA', 'SA', 'LM', 'BE'};
            options = [common; output; {'Which', 'largest', 'choice', which}];
        case 'dlhessianTrace'
            options = [common
                       {'NumMatvecs', 100, 'count', {}
                        'Method', 'hutch++', 'choice', {'hutch++', 'hutchinson', 'xtrace'}
                        'Seed', [], 'seed', {}}];
        case 'dlnewtonUpdate'
            options = [common
                       {'Damping', 1e-3, 'nonneg', {}
                        'LearnRate', 1, 'positive', {}}];
        case 'hessiancoreSetup'
            options = {'Python', '', 'text', {}
                       'Transport', 'auto', 'choice', transports
                       'ServerFolder', '', 'text', {}
                       'Save', true, 'logical', {}
                       'Verbose', true, 'logical', {}};
        otherwise
            error('hessiancore:invalidInput', 'hcOptions: no options are defined for ''%s''', caller);
    end
end
