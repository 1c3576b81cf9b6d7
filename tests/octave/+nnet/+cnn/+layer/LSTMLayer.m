classdef LSTMLayer < nnet.cnn.layer.Layer
    % Test double of lstmLayer(numHiddenUnits, Name=Value)
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.lstmlayer.html): NumHiddenUnits H
    % (a positive integer), OutputMode 'sequence' (default: 'CBT' out) or 'last' ('CB' out),
    % StateActivationFunction 'tanh' (default) or 'softsign', GateActivationFunction 'sigmoid' (default)
    % or 'hard-sigmoid', HasStateInputs and HasStateOutputs (default false), InputSize 'auto' until
    % initialized; learnables InputWeights 4H x InputSize, RecurrentWeights 4H x H, Bias 4H x 1
    % (gates input, forget, cell candidate, output); state HiddenState and CellState, H x 1 (zeros at initialization).
    % Takes 'CBT' input. Export only (no predict).
    properties
        InputSize = 'auto'
        NumHiddenUnits = []
        OutputMode = 'sequence'
        StateActivationFunction = 'tanh'
        GateActivationFunction = 'sigmoid'
        HasStateInputs = false
        HasStateOutputs = false

        InputWeights = []
        RecurrentWeights = []
        Bias = []
        HiddenState = []
        CellState = []
    end
    properties (Constant)
        DefaultName = 'lstm'
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

        function names = learnableNames(~)
            names = {'InputWeights', 'RecurrentWeights', 'Bias'};
        end

        function names = stateNames(~)
            names = {'HiddenState', 'CellState'};
        end

        function shapes = parameterShapes(layer, inSizes, inFmts)
            if ~strcmp(inFmts{1}, 'CBT')
                error('hessiancoreTest:format', 'layer ''%s'': lstmLayer takes ''CBT'' input here, got ''%s''', ...
                      layer.Name, inFmts{1});
            end
            H = layer.NumHiddenUnits;
            rows = 4 * H;
            shapes = {[rows, inSizes{1}], [rows, H], [rows, 1], [H, 1], [H, 1]};
        end

        function value = initialValue(layer, name, shape, inSizes)
            H = layer.NumHiddenUnits;
            switch name
                case {'InputWeights', 'RecurrentWeights'}
                    % MATLAB: Glorot and orthogonal; any random values serve the tests.
                    value = nnet.cnn.layer.Layer.glorot(shape, shape(2), shape(1));
                case 'Bias'
                    value = zeros(shape, 'single');
                    value(H + 1:2 * H) = 1;  % 'unit-forget-gate'
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
