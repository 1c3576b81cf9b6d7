classdef GRULayer < nnet.cnn.layer.Layer
    % Test double of gruLayer(numHiddenUnits, Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.grulayer.html): NumHiddenUnits H
    % (a positive integer), OutputMode 'sequence' (default: 'CBT' out) or 'last' ('CB' out),
    % StateActivationFunction 'tanh' (default) or 'softsign', GateActivationFunction 'sigmoid' (default)
    % or 'hard-sigmoid', HasStateInputs and HasStateOutputs (default false), InputSize 'auto' until
    % initialized; learnables InputWeights 3H x InputSize, RecurrentWeights 3H x H, Bias 3H x 1
    % (gates reset, update, candidate);
    % ResetGateMode 'after-multiplication' (default), 'before-multiplication' or
    % 'recurrent-bias-after-multiplication' (Bias 6H x 1); state HiddenState, H x 1 (zeros at initialization).
    % Takes 'CBT' input. Export only (no predict).
    properties
        InputSize = 'auto'
        NumHiddenUnits = []
        OutputMode = 'sequence'
        StateActivationFunction = 'tanh'
        GateActivationFunction = 'sigmoid'
        HasStateInputs = false
        HasStateOutputs = false
        ResetGateMode = 'after-multiplication'
        InputWeights = []
        RecurrentWeights = []
        Bias = []
        HiddenState = []
    end
    properties (Constant)
        DefaultName = 'gru'
    end
    methods

        function layer = set.NumHiddenUnits(layer, value)
            layer.NumHiddenUnits = hcTestCheck(value, 'posint', 'NumHiddenUnits');
        end

        function layer = set.InputSize(layer, value)
            layer.InputSize = hcTestCheck(value, 'auto-or-posint', 'InputSize');
        end

        function layer = set.OutputMode(layer, value)
            layer.OutputMode = hcTestCheck(value, 'member', 'OutputMode', {'sequence', 'last'});
        end

        function layer = set.StateActivationFunction(layer, value)
            layer.StateActivationFunction = hcTestCheck(value, 'member', 'StateActivationFunction', ...
                                                        {'tanh', 'softsign'});
        end

        function layer = set.GateActivationFunction(layer, value)
            layer.GateActivationFunction = hcTestCheck(value, 'member', 'GateActivationFunction', ...
                                                       {'sigmoid', 'hard-sigmoid'});
        end

        function layer = set.HasStateInputs(layer, value)
            layer.HasStateInputs = hcTestCheck(value, 'logical', 'HasStateInputs');
        end

        function layer = set.HasStateOutputs(layer, value)
            layer.HasStateOutputs = hcTestCheck(value, 'logical', 'HasStateOutputs');
        end

        function layer = set.ResetGateMode(layer, value)
            layer.ResetGateMode = hcTestCheck(value, 'member', 'ResetGateMode', ...
                                              {'after-multiplication', 'before-multiplication', ...
                                               'recurrent-bias-after-multiplication'});
        end

        function names = learnableNames(~)
            names = {'InputWeights', 'RecurrentWeights', 'Bias'};
        end

        function names = stateNames(~)
            names = {'HiddenState'};
        end

        function shapes = parameterShapes(layer, inSizes, inFmts)
            if ~strcmp(inFmts{1}, 'CBT')
                error('hessiancoreTest:format', 'layer ''%s'': gruLayer takes ''CBT'' input here, got ''%s''', ...
                      layer.Name, inFmts{1});
            end
            H = layer.NumHiddenUnits;
            rows = 3 * H;
            biasRows = rows;
            if strcmp(layer.ResetGateMode, 'recurrent-bias-after-multiplication')
                biasRows = 2 * rows;
            end
            shapes = {[rows, inSizes{1}], [rows, H], [biasRows, 1], [H, 1]};
        end

        function value = initialValue(layer, name, shape, inSizes)
            switch name
                case {'InputWeights', 'RecurrentWeights'}
                    % MATLAB: Glorot and orthogonal; any random values serve the tests.
                    value = nnet.cnn.layer.Layer.glorot(shape, shape(2), shape(1));
                otherwise
                    value = initialValue@nnet.cnn.layer.Layer(layer, name, shape, inSizes);
            end
        end

        function [sz, fmt] = outputSize(layer, ~, ~)
            sz = layer.NumHiddenUnits;
            fmt = 'CBT';
            if strcmp(layer.OutputMode, 'last')
                fmt = 'CB';
            end
        end

    end
end
